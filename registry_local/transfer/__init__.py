"""Moving images between files and the backing store: `import` and `export`, the
image writer they share (in distribution's order), OCI layouts, and the small
sample images the quick start and the tests build."""
