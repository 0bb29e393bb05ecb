"""The core: load → validate → resolve → compile → plan → execute → record → report."""
