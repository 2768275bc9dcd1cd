"""The ``kd`` command line: a thin click layer over ``kdstore``."""
