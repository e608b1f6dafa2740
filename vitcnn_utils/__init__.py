"""vitcnn_utils: the routines behind the vitcnn book, a reproduction of Raghu et al. (NeurIPS 2021),
"Do Vision Transformers See Like Convolutional Neural Networks?".

Modules: ``hooks`` (capture representations), ``cka`` (minibatch CKA), ``attention`` (mean attention
distance), ``models`` / ``zoo`` (timm models and the trained Fashion-MNIST zoo), ``data``, ``train``.
"""
import warnings

# huggingface_hub (imported by timm) imports tqdm.auto, which inside Jupyter without ipywidgets warns
# "IProgress not found" (a TqdmWarning) into every notebook's output. The package imports timm only in
# submodules, so this filter is in place before it is first imported.
warnings.filterwarnings("ignore", message="IProgress not found")

__version__ = "0.1.0"
