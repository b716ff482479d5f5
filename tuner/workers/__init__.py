"""Workers that run a study's trials, alone or many against one storage, and the local launcher."""
