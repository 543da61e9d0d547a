"""Fixtures that start the project's real processes (wallet, engine, worker, web) for tests."""
