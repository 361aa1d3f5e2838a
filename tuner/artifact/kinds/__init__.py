"""The forms an export saves its model in, one module per kind (``base.ExportKind`` is the contract), and the
registry that lists them (``registry``): how to add one is in ``registry``'s docstring."""
