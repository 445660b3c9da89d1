"""End-to-end interop tests against the real upstream horde-model-reference (marker `peer`)."""
