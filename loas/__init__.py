"""Front door of the loas tool: the `loas` command line (see loas.cli)."""
