"""The `training` operation: a next-bar direction classifier trained with PyTorch."""
