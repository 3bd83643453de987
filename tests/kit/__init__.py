"""What the tests share: real stores, endpoints, clients and processes to test against.

On the path as ``kit`` (pyproject's ``pythonpath``), so a test anywhere in the tree writes
``from kit.store import writer_store``. Fixtures live in the ``conftest.py`` of the folder that uses them.
"""
