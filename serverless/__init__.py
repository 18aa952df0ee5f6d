"""Serverless entry points that put a vidgraph graph behind another platform's worker API."""
