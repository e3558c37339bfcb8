"""Data: synthetic faces, dataset scanning, webdataset shards and loaders."""
