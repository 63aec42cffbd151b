"""shopsense: recommendations, segments, basket rules, demand forecasts and inventory policy
from e-commerce order history, as Spark batch jobs over Delta Lake tables.

Importing shopsense has no side effects: no session is created, no environment variable is set,
no file is touched. Build a session with :func:`shopsense.core.session.build_session`.
"""

__version__ = "0.1.0"
