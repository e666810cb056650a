"""Ingestion: raw events and labels in; validated records or dead letters out."""
