"""The dashboard's pages (wired by app.py with st.navigation)."""
