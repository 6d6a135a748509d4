"""Tests of the {{name}} policy in CPython, no component built: `./test.sh`."""

import unittest

from cachelet_policy import Compiled
from app import policy

compiled = Compiled(policy)


class PolicyTest(unittest.TestCase):
    def test_declares_without_errors(self):
        self.assertEqual(compiled.errors(), [])

    def test_get_item_is_keyed_by_its_id(self):
        self.assertEqual(compiled.read("get_item", {"item_id": 42}).key, "item:42")

    def test_update_item_invalidates_it(self):
        self.assertEqual(compiled.write("update_item", {"item_id": 42}).invalidate, ["item:42"])


if __name__ == "__main__":
    unittest.main()
