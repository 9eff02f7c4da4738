"""Set-up for the test suite lives in the repository's root conftest.py.

It is shared with the docstring examples that pytest also collects.
"""
