"""Write the offline long-document retrieval set (WikiText-2, BEIR layout). See m2bert.embeddings.retrieval_data."""
from m2bert.embeddings.retrieval_data import main

if __name__ == "__main__":
    raise SystemExit(main())
