"""The test suite (see README: test_ref_*, test_twin_*, test_parity_*)."""
