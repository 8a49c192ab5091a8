"""The pipeline's core, which every command runs and which imports nothing above it: the params
schema and its loading, the one-line errors, where files live, atomic writes, and the command harness."""
