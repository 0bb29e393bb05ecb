"""Built-in stage plugins, registered through the `sluice.stages` entry-point group like any other."""
