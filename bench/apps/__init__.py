"""The benchmark's variants, one module each, all serving the same endpoint (see ``_common``)."""
