"""The test suite: one module per module of emdloss, in folders that mirror its packages.

A regular package (not a namespace one), so that ``tests.compare.test_select`` imported by name
(Ray workers do) is this folder even where an installed distribution ships a top-level ``tests``
package (python-ldl does).
"""
