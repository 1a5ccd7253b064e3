"""The pure kernel: every module here is a set of pure functions over immutable pytrees.

No I/O, no host syncs (``.item()``), no global randomness, no in-place change of an input.
Nothing here imports :mod:`functional_rl.shell` or :mod:`functional_rl.compat` (a test walks
the imports to keep it so).
"""
