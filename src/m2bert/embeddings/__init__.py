"""Sentence embeddings and long-document retrieval with M2-BERT (issue #13).

``retrieval_data`` builds an offline long-document retrieval set from WikiText-2; ``sentence_transformers``
exports and loads our models as sentence-transformers directories; ``retrieval`` fine-tunes one with a
contrastive loss and evaluates it (the ``m2bert-retrieval`` CLI). Our models are padding-invariant, so
length-sorted batches need no padding to the maximum length (the original pads every input to it).
"""
