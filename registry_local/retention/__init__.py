"""Keeping the bucket the size of what the fleet uses: hosts note the manifests
they serve and what they filled from an origin (records.py); `registry-local gc`
reads the bucket (inventory.py), plans what nobody used for long enough and
removes it in distribution's layout (gc.py)."""
