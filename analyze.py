"""Run one of the report's analyses: ``python analyze.py task=<data|polarization|recommend|genres|dimensions>``.

It uses the trained model for ``data=``, ``split=``, ``model=`` and ``K=`` (training it
first if there is none; ``checkpoint=PATH`` picks a model file) and writes figures, JSON
and CSV into its run folder (see README.md).  The same as ``rec analyze`` once installed.
"""

from rec.command import analyze

if __name__ == "__main__":
    analyze()
