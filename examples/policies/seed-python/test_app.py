"""The seed's rules, tested in CPython without building a component (``python3 -m
unittest``, with the bindings ``componentize-py -d wit -w cache-policy bindings DIR`` writes on
the path): what the host would get from the component."""

import unittest

from componentize_py_types import Err
from cachelet_policy import Compiled
from app import policy

seed = Compiled(policy)


class SeedTest(unittest.TestCase):
    def test_declares_every_op_without_errors(self):
        self.assertEqual(seed.errors(), [])
        self.assertEqual(len(seed.describe().ops), 24)

    def test_a_computed_read_renders_and_escapes_like_the_host(self):
        self.assertEqual(seed.read("get_search", {"q": "a:b"}).key, "search:a%3Ab")
        self.assertIsNone(seed.read("get_search", {"q": ""}))

    def test_a_static_write_and_its_recache(self):
        rule = seed.write("update_user", {"user_id": 42, "data": {"name": "x"}})
        self.assertEqual(rule.invalidate, ["user:42"])
        self.assertEqual([(r.op, [n for n, _ in r.args]) for r in rule.recache],
                         [("get_user", ["user_id"])])

    def test_errors_name_the_op(self):
        with self.assertRaises(Err) as e:
            seed.read("get_user", {"usr_id": 1})
        self.assertTrue(e.exception.value.startswith("get_user: no argument `user_id`"))


if __name__ == "__main__":
    unittest.main()
