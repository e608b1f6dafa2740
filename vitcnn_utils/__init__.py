"""vitcnn_utils: the routines behind the vitcnn book, a reproduction of Raghu et al. (NeurIPS 2021),
"Do Vision Transformers See Like Convolutional Neural Networks?".

Modules: ``hooks`` (capture representations), ``cka`` (minibatch CKA), ``attention`` (mean attention
distance), ``models`` / ``zoo`` (timm models and the trained Fashion-MNIST zoo), ``data``, ``train``.
"""
__version__ = "0.1.0"
