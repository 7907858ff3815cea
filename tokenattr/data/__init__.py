"""Readers and generators of the data the evaluations and the demo use. They import no model code."""
