"""Utilities stages share: images (imaging), provenance inside image files (provenance), torch device
and dtype choices (torch_runtime), error reasons (errors), fault injection for tests (faults).

May import: schemas.
"""
