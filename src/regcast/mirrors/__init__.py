"""Mirror sets: many images kept in sync across many registries, declared in one document."""
