"""Metrics over (input, relevance, label) that know nothing about models."""
