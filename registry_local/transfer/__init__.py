"""Moving images between files and the backing store: `import` and `export`."""
