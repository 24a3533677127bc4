"""GLUE fine-tuning: per-task settings in YAML (yamls/glue/), one generic job, the MNLI → RTE/MRPC/STS-B
chain, a GPU queue, results tables beside the published numbers, and Hydra sweep reports.

    m2bert-glue start.path=runs/m2-bert-pretrain/hf                  # the paper's recipe, 80M
    m2bert-glue glue=m2_bert_base_110m start.kind=composer start.path=ckpt.pt
    m2bert-glue -m tasks=[rte] glue.rte.lr=1e-5,3e-5,5e-5             # a sweep, with a sweep report
"""
