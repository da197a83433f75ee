"""Shareflow: a GraphQL gateway for multi-party revenue sharing."""
