"""The report: one function per figure (`figures`) and the HTML page (`page`)."""
