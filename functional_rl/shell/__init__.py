"""The shell: everything with side effects, and what drives the kernel.

Building and compiling the step functions, the training loop, callbacks, checkpoints, the
CLI, data-parallel set-up (torchrun), the policy store and the presets.
"""
