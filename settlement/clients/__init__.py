"""Clients of the services the exchange talks to over the network."""
