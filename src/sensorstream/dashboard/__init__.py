"""The live dashboard (Streamlit): the page, its data through StoreClient, its wording, its launcher."""
