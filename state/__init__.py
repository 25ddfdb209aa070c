"""The state file: its model, storage, lock, backup and write-ahead journal."""
