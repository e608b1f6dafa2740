"""Command-line tools and the book's build glue, kept apart from the measurement library (nothing in
:mod:`vitcnn_utils` outside this folder imports them):

* ``python -m vitcnn_utils.tools.book`` — run chapter notebooks with papermill (results cache) and build the book;
* ``python -m vitcnn_utils.tools.cka_heatmaps`` — all-layer ViT × ResNet CKA heatmaps, one process or ``torchrun``;
* :mod:`vitcnn_utils.tools.pages` — puts a chapter's computed numbers into its Markdown (MyST-NB glue);
* :mod:`vitcnn_utils.tools.sphinx_chapters` — the ``_config.yml`` extension that makes ``jupyter-book build .``
  execute the chapters first.
"""
