"""The Second Medical Opinion policy as pure rules (no I/O): facts in, a decision with its trail out."""
