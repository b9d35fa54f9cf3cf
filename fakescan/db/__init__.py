"""The results schema and database access shared by the scheduler, the worker and the queries."""
