"""The bridge to Feast: offline tables, definitions, the store, training frames and online lookups."""
