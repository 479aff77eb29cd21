"""The app's logic, one module per concern; the pages (Home.py, pages/) only lay out widgets and figures.

- form:     the Train form <-> a run config (widget keys, teacher choices, uploads); validation is recipes.resolve
- roots:    the folders the Data-folder box may read (an allow-list; the CLI reads any folder)
- text_upload: a user's .txt files (or a zip of them) for the text-folder datasets, checked and saved as a Data folder
- messages: errors as the browser shows them: a config field becomes its widget, a CLI flag its widget's name
- progress: a run's live progress, the runs a Train tab shows and the queue, read from the store (any tab sees them)
- runs:     the Runs page's table, comparisons, exports and the teacher-student gap
- analysis: runs with probes, sample picking, the stage pairs a run distilled, rebuilt models, the Home map
- widgets:  Streamlit pieces every page shares (page setup, widgets from specs, run/epoch/sample pickers)
- cache:    Streamlit caches: shared objects (the store, probes, models) and computed results

form, messages, roots, text_upload, progress, runs and analysis import no Streamlit: tests call them directly.
"""
