"""The dashboard's pages, wired by app.py with st.navigation (not named pages/: Streamlit would
serve a folder of that name as pages of its own, without app.py)."""
