"""The README's meta-update example runs as written."""

import os
import re

README = os.path.join(os.path.dirname(__file__), '..', 'README.md')


def test_readme_meta_api_example_runs(capsys):
  text = open(README, encoding='utf-8').read()
  section = text[text.index('## The meta-update in your own research'):]
  code = re.search(r'```python\n(.*?)```', section, re.S).group(1)
  exec(compile(code, 'README.md', 'exec'), {})  # pylint: disable=exec-used
  printed = capsys.readouterr().out
  assert 'outer_loss' in printed and 'nan' not in printed
