"""The corpus report: every signal's distribution over all batches, what each threshold and preset
keeps (clips and hours), contact sheets of the clips behind the numbers, and counts per source.

signals.py (what to report, from the score registry), numbers.py (the SQL), contact_sheets.py (the
clips and their middle frames, cached), pictures.py (histograms and sheets as images), page.py (the
self-contained HTML and the Markdown), build.py (all of it, written to $VIDSCORE_HOME/reports/).
"""
