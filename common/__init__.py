"""Small shared utilities used by ``tabular``, ``imagery``, ``fusion`` and ``pipelines``.

Nothing here imports torch or any of the other project packages.
"""
