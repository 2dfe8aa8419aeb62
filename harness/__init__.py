"""The caller side of rtsip: CLI, softphone, scenario runner, pytest plugin, load."""
