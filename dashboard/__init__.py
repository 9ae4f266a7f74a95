"""The Streamlit dashboard (installed as ``steptrace.dashboard``)."""
