"""Every criteria test runs seeded (torch, numpy, random at 0), the previous states restored."""

from seed_fixture import _seed  # noqa: F401  (an autouse fixture)
