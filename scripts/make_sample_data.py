#!/usr/bin/env python3
"""Regenerate padprep's sample data under ``sample_data/``.

Run from the repository root::

    python scripts/make_sample_data.py

It writes, deterministically (two runs give byte-identical files):

* ``sample_data/chat.jsonl`` -- 48 conversations in the OpenAI / TRL
  conversational shape (``{"messages": [...], "tools": [...]?}``): single-turn,
  with a system prompt, multi-turn, and tool calling.  The text is assembled
  from the hand-written lists below with ``random.Random(0)``.
* ``sample_data/tokenizer/`` -- a small byte-level BPE tokenizer with ChatML
  special tokens, a Qwen2.5-style chat template (tool support) and, on
  purpose, no pad token.
* ``sample_data/tokenizer-bos/`` -- a second small byte-level BPE tokenizer
  with Llama-3 special tokens whose post-processor prepends
  ``<|begin_of_text|>``; it ships no chat template.

Only the standard library and ``tokenizers`` are needed.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

SEED = 0
VOCAB_SIZE = 3000
MODEL_MAX_LENGTH = 4096

REPO_ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = REPO_ROOT / "sample_data"

CHATML_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
LLAMA3_SPECIAL_TOKENS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
]

# ---------------------------------------------------------------------------
# Chat template (ChatML with tools, written like Qwen2.5's)
# ---------------------------------------------------------------------------

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
TOOLS_PREAMBLE = (
    "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
TOOLS_POSTAMBLE = (
    "\n</tools>\n\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
)

# The @NAME@ placeholders are replaced by Jinja string literals (see chat_template()).
CHAT_TEMPLATE_SKELETON = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- @DEFAULT_SYSTEM_PROMPT@ }}
    {%- endif %}
    {{- @TOOLS_PREAMBLE@ }}
    {%- for tool in tools %}
        {{- '\n' }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- @TOOLS_POSTAMBLE@ + '<|im_end|>\n' }}
{%- elif messages[0]['role'] == 'system' %}
    {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
{%- endif %}
{%- for message in messages %}
    {%- if message['role'] == 'system' %}
        {%- if not loop.first %}
            {{- '<|im_start|>system\n' + message['content'] + '<|im_end|>\n' }}
        {%- endif %}
    {%- elif message['role'] == 'user' %}
        {{- '<|im_start|>user\n' + message['content'] + '<|im_end|>\n' }}
    {%- elif message['role'] == 'assistant' %}
        {{- '<|im_start|>assistant' }}
        {%- if message['content'] %}
            {{- '\n' + message['content'] }}
        {%- elif not message['tool_calls'] %}
            {{- '\n' }}
        {%- endif %}
        {%- if message['tool_calls'] %}
            {%- for tool_call in message['tool_calls'] %}
                {%- if tool_call['function'] is defined %}
                    {%- set tool_call = tool_call['function'] %}
                {%- endif %}
                {{- '\n<tool_call>\n{"name": "' + tool_call['name'] + '", "arguments": ' }}
                {%- if tool_call['arguments'] is string %}
                    {{- tool_call['arguments'] }}
                {%- else %}
                    {{- tool_call['arguments'] | tojson }}
                {%- endif %}
                {{- '}\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- elif message['role'] == 'tool' %}
        {%- if loop.first or messages[loop.index0 - 1]['role'] != 'tool' %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' + message['content'] + '\n</tool_response>' }}
        {%- if loop.last or messages[loop.index0 + 1]['role'] != 'tool' %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""


def chat_template() -> str:
    """Return the ChatML chat template with the fixed texts filled in.

    ``json.dumps`` of ASCII text is a valid double-quoted Jinja string literal.
    """
    template = CHAT_TEMPLATE_SKELETON
    for name, text in [
        ("DEFAULT_SYSTEM_PROMPT", DEFAULT_SYSTEM_PROMPT),
        ("TOOLS_PREAMBLE", TOOLS_PREAMBLE),
        ("TOOLS_POSTAMBLE", TOOLS_POSTAMBLE),
    ]:
        template = template.replace(f"@{name}@", json.dumps(text))
    return template


# ---------------------------------------------------------------------------
# Hand-written content
# ---------------------------------------------------------------------------

COUNTRIES = [
    {
        "country": "France", "capital": "Paris", "language": "French", "currency": "the euro (€)",
        "fact": "It sits on the Seine and has been the seat of government for most of the last thousand years.",
        "tip": "Buy a carnet or a Navigo pass for the Métro, and book the Louvre in advance to skip the queue.",
    },
    {
        "country": "Japan", "capital": "Tokyo", "language": "Japanese", "currency": "the Japanese yen (¥)",
        "fact": "The Greater Tokyo Area is the most populous metropolitan area in the world, with about 37 million people.",
        "tip": "Get a rechargeable IC card such as Suica for trains and convenience stores, and carry some cash.",
    },
    {
        "country": "Canada", "capital": "Ottawa", "language": "English and French",
        "currency": "the Canadian dollar",
        "fact": "It was chosen by Queen Victoria in 1857, partly because it lay on the border between English- and French-speaking Canada.",
        "tip": "In winter you can skate along the Rideau Canal, which becomes one of the longest skating rinks in the world.",
    },
    {
        "country": "Australia", "capital": "Canberra", "language": "English", "currency": "the Australian dollar",
        "fact": "It was purpose-built as a compromise between the rival cities of Sydney and Melbourne.",
        "tip": "Hire a bike and ride around Lake Burley Griffin; most of the national museums are close to the shore.",
    },
    {
        "country": "Brazil", "capital": "Brasília", "language": "Portuguese", "currency": "the Brazilian real",
        "fact": "It was inaugurated in 1960 and its city plan, by Lúcio Costa, is shaped like an aeroplane.",
        "tip": "Visit the Cathedral of Brasília designed by Oscar Niemeyer, and bring sunscreen: the plateau sun is strong.",
    },
    {
        "country": "Kenya", "capital": "Nairobi", "language": "Swahili and English", "currency": "the Kenyan shilling",
        "fact": "It is one of the few capitals with a national park inside the city limits, home to lions and giraffes.",
        "tip": "Go to Nairobi National Park early in the morning, when the animals are most active.",
    },
    {
        "country": "Peru", "capital": "Lima", "language": "Spanish, with Quechua and Aymara also official",
        "currency": "the Peruvian sol",
        "fact": "Founded by Francisco Pizarro in 1535, it is known as the City of Kings and for its excellent food.",
        "tip": "Try ceviche for lunch rather than dinner; locals eat it when the fish is freshest.",
    },
    {
        "country": "Norway", "capital": "Oslo", "language": "Norwegian", "currency": "the Norwegian krone",
        "fact": "The city hall hosts the Nobel Peace Prize ceremony every December.",
        "tip": "An Oslo Pass covers public transport and most museums, which adds up quickly in an expensive city.",
    },
    {
        "country": "Egypt", "capital": "Cairo", "language": "Arabic", "currency": "the Egyptian pound",
        "fact": "It is the largest city in the Arab world, and the pyramids of Giza lie on its western edge.",
        "tip": "Visit Giza at opening time to avoid the heat and the biggest crowds.",
    },
    {
        "country": "New Zealand", "capital": "Wellington", "language": "English, Māori and New Zealand Sign Language",
        "currency": "the New Zealand dollar",
        "fact": "It is the southernmost capital of a sovereign state and is famous for its strong winds.",
        "tip": "Take the cable car up to the Botanic Garden and walk back down into the city.",
    },
    {
        "country": "Türkiye", "capital": "Ankara", "language": "Turkish", "currency": "the Turkish lira",
        "fact": "Many people guess Istanbul, but Ankara became the capital in 1923.",
        "tip": "The Museum of Anatolian Civilizations is small enough to see in an afternoon and well worth it.",
    },
    {
        "country": "Vietnam", "capital": "Hanoi", "language": "Vietnamese", "currency": "the Vietnamese đồng",
        "fact": "The city is more than a thousand years old and is built around dozens of lakes.",
        "tip": "Cross the road slowly and steadily; the scooters will flow around you.",
    },
]

RECIPES = [
    {
        "name": "pancakes",
        "ask": "How do I make simple pancakes?",
        "serves": 4,
        "ingredients": ["200 g plain flour", "2 eggs", "300 ml milk", "1 tbsp melted butter", "a pinch of salt"],
        "steps": [
            "Whisk the flour and salt in a bowl and make a well in the middle.",
            "Crack in the eggs, add a splash of milk and whisk, then slowly add the rest of the milk until the batter is smooth.",
            "Stir in the melted butter and let the batter rest for 10 minutes.",
            "Heat a lightly oiled frying pan over a medium heat and pour in a small ladle of batter.",
            "Cook for about a minute until golden underneath, flip, and cook the other side for 30 seconds.",
        ],
        "tip": "The first pancake is usually a test; don't worry if it comes out pale.",
        "swap_q": "Can I make them without eggs?",
        "swap_a": "Yes. Replace the two eggs with one mashed ripe banana, or with 2 tbsp of ground flaxseed mixed with 6 tbsp of water and left to thicken for five minutes. Add a teaspoon of baking powder so the pancakes stay light.",
        "storage": "Cooked pancakes keep for two days in the fridge, layered with baking paper. Reheat them in a dry pan or for a few seconds in the microwave.",
    },
    {
        "name": "tomato soup",
        "ask": "What's an easy recipe for tomato soup?",
        "serves": 4,
        "ingredients": ["2 tbsp olive oil", "1 onion, chopped", "2 garlic cloves, crushed", "800 g tinned chopped tomatoes", "500 ml vegetable stock", "1 tsp sugar", "salt, pepper and fresh basil"],
        "steps": [
            "Warm the oil in a large pan and soften the onion for 8 minutes without letting it brown.",
            "Add the garlic and cook for one more minute.",
            "Tip in the tomatoes, stock and sugar, bring to the boil and simmer for 20 minutes.",
            "Blend until smooth, season with salt and pepper, and serve with torn basil.",
        ],
        "tip": "A spoonful of cream or a swirl of pesto on top makes it feel special.",
        "swap_q": "Can I use fresh tomatoes instead of tinned ones?",
        "swap_a": "Yes, use about 1 kg of ripe fresh tomatoes. Roast them first for 25 minutes at 200 °C with a little oil; roasting concentrates the flavour, which summer tomatoes need to match the tinned kind.",
        "storage": "The soup keeps for four days in the fridge and freezes well for up to three months.",
    },
    {
        "name": "guacamole",
        "ask": "How do you make guacamole?",
        "serves": 4,
        "ingredients": ["3 ripe avocados", "1 lime", "½ small red onion, finely chopped", "1 tomato, deseeded and diced", "a handful of coriander", "1 green chilli (optional)", "salt"],
        "steps": [
            "Halve the avocados, remove the stones and scoop the flesh into a bowl.",
            "Mash with a fork, leaving some texture, and squeeze in the lime juice.",
            "Stir in the onion, tomato, chopped coriander and chilli.",
            "Season with salt and taste; add more lime if it needs brightness.",
        ],
        "tip": "Press cling film directly onto the surface to stop it turning brown.",
        "swap_q": "What if someone doesn't like coriander?",
        "swap_a": "Just leave it out, or use a little flat-leaf parsley for colour. The lime, salt and onion carry most of the flavour anyway.",
        "storage": "Guacamole is best eaten on the day. Covered tightly, it lasts about a day in the fridge; scrape off any brown layer before serving.",
    },
    {
        "name": "French omelette",
        "ask": "How do I make a proper French omelette?",
        "serves": 1,
        "ingredients": ["3 eggs", "1 tbsp butter", "salt", "chopped chives"],
        "steps": [
            "Beat the eggs with a pinch of salt until no streaks of white remain.",
            "Melt the butter in a non-stick pan over a medium-low heat until it foams.",
            "Pour in the eggs and stir constantly with a spatula while shaking the pan, so you get small, soft curds.",
            "When the eggs are almost set but still glossy, stop stirring and let the base firm up for a few seconds.",
            "Roll the omelette onto a plate, seam side down, and sprinkle with chives.",
        ],
        "tip": "It should have no brown colour at all; if it browns, the heat is too high.",
        "swap_q": "Can I add cheese?",
        "swap_a": "Of course. Scatter a small handful of grated Gruyère over the eggs just before you roll it, so it melts from the residual heat.",
        "storage": "An omelette doesn't keep well; make it just before eating. It only takes two minutes.",
    },
    {
        "name": "banana bread",
        "ask": "Do you have a recipe for banana bread?",
        "serves": 8,
        "ingredients": ["3 very ripe bananas", "75 g melted butter", "150 g soft brown sugar", "1 egg", "1 tsp vanilla extract", "1 tsp bicarbonate of soda", "a pinch of salt", "190 g plain flour"],
        "steps": [
            "Heat the oven to 175 °C and line a 900 g loaf tin.",
            "Mash the bananas in a bowl, then stir in the melted butter.",
            "Mix in the sugar, egg and vanilla.",
            "Sprinkle over the bicarbonate of soda and salt, then fold in the flour until just combined.",
            "Pour into the tin and bake for 55–60 minutes, until a skewer comes out clean.",
            "Cool in the tin for 10 minutes before turning out.",
        ],
        "tip": "The blacker the bananas, the sweeter and moister the loaf.",
        "swap_q": "Can I add walnuts or chocolate chips?",
        "swap_a": "Yes, fold in about 100 g of chopped walnuts or chocolate chips with the last of the flour. Toss them in a spoonful of flour first so they don't sink.",
        "storage": "Wrapped well, it keeps for three days at room temperature, and slices freeze well for a month.",
    },
    {
        "name": "red lentil dal",
        "ask": "How do I cook a red lentil dal?",
        "serves": 4,
        "ingredients": ["250 g red lentils, rinsed", "1 litre water", "1 tsp turmeric", "1 tbsp oil or ghee", "1 onion, sliced", "3 garlic cloves", "a thumb of ginger, grated", "1 tsp cumin seeds", "1 tsp garam masala", "salt and lemon juice"],
        "steps": [
            "Simmer the lentils with the water and turmeric for about 20 minutes, stirring now and then, until soft.",
            "Meanwhile fry the cumin seeds in the oil until they crackle, then add the onion and cook until golden.",
            "Add the garlic, ginger and garam masala and cook for two more minutes.",
            "Stir the spiced onions into the lentils, season with salt, and finish with a squeeze of lemon.",
        ],
        "tip": "Serve it with rice or warm flatbread, and a spoonful of yoghurt on the side.",
        "swap_q": "Is it vegan?",
        "swap_a": "It is if you use oil rather than ghee and skip the yoghurt on the side. Coconut yoghurt works well instead.",
        "storage": "Dal keeps for four days in the fridge and thickens as it cools; loosen it with a splash of water when you reheat it.",
    },
]

CODE_QA = [
    {
        "q": "How do I reverse a string in Python?",
        "a": "Use slicing with a step of -1:\n\n```python\ntext = \"hello\"\nreversed_text = text[::-1]\nprint(reversed_text)  # olleh\n```\n\nThe slice `[::-1]` walks the string from the end to the start. If you need an iterator instead of a new string, `reversed(text)` works too, and `\"\".join(reversed(text))` gives the same result.",
        "followups": [
            ("How would I check if a word is a palindrome with that?", "Compare the word with its reverse, ignoring case:\n\n```python\ndef is_palindrome(word: str) -> bool:\n    cleaned = word.lower()\n    return cleaned == cleaned[::-1]\n\nprint(is_palindrome(\"Level\"))  # True\nprint(is_palindrome(\"Python\"))  # False\n```"),
            ("And how would I test it with pytest?", "Put the tests in a file whose name starts with `test_`:\n\n```python\nimport pytest\nfrom palindromes import is_palindrome\n\n@pytest.mark.parametrize(\"word\", [\"level\", \"Racecar\", \"a\"])\ndef test_palindromes(word):\n    assert is_palindrome(word)\n\ndef test_not_palindrome():\n    assert not is_palindrome(\"python\")\n```\n\nThen run `pytest` from the project root."),
        ],
    },
    {
        "q": "What's the best way to check if a key exists in a Python dictionary?",
        "a": "Use the `in` operator:\n\n```python\nprices = {\"apple\": 0.5, \"pear\": 0.75}\nif \"apple\" in prices:\n    print(\"We sell apples\")\n```\n\nIf you want the value and a fallback in one step, use `prices.get(\"kiwi\", 0.0)`, which returns the default instead of raising a `KeyError`.",
        "followups": [
            ("What if I want to count how often each word appears in a list?", "`collections.Counter` does exactly that:\n\n```python\nfrom collections import Counter\n\nwords = [\"red\", \"blue\", \"red\", \"green\", \"red\"]\ncounts = Counter(words)\nprint(counts.most_common(2))  # [('red', 3), ('blue', 1)]\n```"),
        ],
    },
    {
        "q": "How can I read a text file line by line in Python without loading it all into memory?",
        "a": "Iterate over the file object; it yields one line at a time:\n\n```python\nwith open(\"data.txt\", encoding=\"utf-8\") as f:\n    for line in f:\n        print(line.rstrip(\"\\n\"))\n```\n\nThe `with` block closes the file for you, even if an exception is raised inside the loop.",
        "followups": [
            ("How do I skip empty lines?", "Strip each line and continue when it is empty:\n\n```python\nwith open(\"data.txt\", encoding=\"utf-8\") as f:\n    for line in f:\n        line = line.strip()\n        if not line:\n            continue\n        print(line)\n```"),
            ("And if the file is JSON Lines?", "Parse each non-empty line with `json.loads`:\n\n```python\nimport json\n\nwith open(\"data.jsonl\", encoding=\"utf-8\") as f:\n    records = [json.loads(line) for line in f if line.strip()]\n```"),
        ],
    },
    {
        "q": "What's the difference between a list and a tuple in Python?",
        "a": "A list is mutable: you can append, remove and change items after creating it. A tuple is immutable: once created, its contents cannot change.\n\nBecause tuples are immutable (and their items are hashable), they can be used as dictionary keys or stored in sets, and they signal that a collection has a fixed structure, such as a pair of coordinates `(x, y)`. Use a list for a sequence of similar things that may grow, like a list of file names.",
        "followups": [
            ("Are tuples faster?", "Slightly. Creating a small tuple is a little cheaper than creating a list, and tuples use a bit less memory, but the difference rarely matters. Choose based on meaning, not speed."),
        ],
    },
    {
        "q": "How do I undo my last git commit but keep the changes?",
        "a": "Run:\n\n```bash\ngit reset --soft HEAD~1\n```\n\nThis moves the branch back by one commit and leaves your changes staged. If you'd rather have them unstaged, use `git reset HEAD~1` (a mixed reset). Avoid doing this on a commit you have already pushed to a shared branch; use `git revert` there instead.",
        "followups": [
            ("What does git revert do differently?", "`git revert <commit>` creates a new commit that applies the opposite of the given commit. History is not rewritten, so it is safe on branches other people have pulled."),
        ],
    },
    {
        "q": "Write a SQL query that counts the number of orders per customer.",
        "a": "Group by the customer and count the rows:\n\n```sql\nSELECT customer_id, COUNT(*) AS order_count\nFROM orders\nGROUP BY customer_id\nORDER BY order_count DESC;\n```",
        "followups": [
            ("Only show customers with more than five orders.", "Filter the groups with `HAVING`:\n\n```sql\nSELECT customer_id, COUNT(*) AS order_count\nFROM orders\nGROUP BY customer_id\nHAVING COUNT(*) > 5\nORDER BY order_count DESC;\n```\n\n`WHERE` filters rows before grouping; `HAVING` filters the groups afterwards."),
            ("Can you include the customer's name?", "Join the customers table:\n\n```sql\nSELECT c.name, COUNT(o.id) AS order_count\nFROM customers AS c\nJOIN orders AS o ON o.customer_id = c.id\nGROUP BY c.id, c.name\nORDER BY order_count DESC;\n```"),
        ],
    },
    {
        "q": "How do I remove duplicates from an array in JavaScript?",
        "a": "Spread a `Set` back into an array:\n\n```javascript\nconst numbers = [1, 2, 2, 3, 1];\nconst unique = [...new Set(numbers)];\nconsole.log(unique); // [1, 2, 3]\n```\n\nA `Set` keeps only the first occurrence of each value and preserves insertion order.",
        "followups": [
            ("What about an array of objects with an id field?", "Use a `Map` keyed by id:\n\n```javascript\nconst uniqueById = [...new Map(items.map((item) => [item.id, item])).values()];\n```\n\nThis keeps the last object seen for each id."),
        ],
    },
    {
        "q": "What does `if __name__ == \"__main__\":` do in Python?",
        "a": "Every module has a `__name__` variable. When you run a file directly, Python sets it to `\"__main__\"`; when the file is imported, it is set to the module's name.\n\nSo code inside that `if` block only runs when the file is executed as a script, not when another module imports it:\n\n```python\ndef main():\n    print(\"Running as a script\")\n\nif __name__ == \"__main__\":\n    main()\n```",
        "followups": [
            ("Why put the code in a main() function?", "It keeps variables local instead of global, makes the entry point easy to call from tests, and lets you reuse it as a console script entry point in `pyproject.toml`."),
        ],
    },
    {
        "q": "How can I find all .log files bigger than 10 MB in a directory tree?",
        "a": "Use `find`:\n\n```bash\nfind /var/log -type f -name \"*.log\" -size +10M\n```\n\nAdd `-exec ls -lh {} +` to see their sizes, or `-delete` to remove them (check the list first!).",
        "followups": [
            ("How do I sort them by size?", "Pipe through `du` and `sort`:\n\n```bash\nfind /var/log -type f -name \"*.log\" -size +10M -exec du -h {} + | sort -rh\n```"),
        ],
    },
]

EXPLAINERS = [
    {
        "q": "Why is the sky blue?",
        "paragraphs": [
            "Sunlight contains all the colours of the rainbow. As it passes through the atmosphere, it collides with nitrogen and oxygen molecules, which are much smaller than the wavelength of visible light. These molecules scatter short wavelengths far more strongly than long ones, an effect called Rayleigh scattering.",
            "Blue light has a short wavelength, so it is scattered in every direction across the whole sky, and that scattered light reaches your eyes from wherever you look. Violet is scattered even more, but the Sun emits less of it, some is absorbed high in the atmosphere, and our eyes are less sensitive to it, so the sky looks blue rather than purple.",
        ],
        "followups": [
            ("So why are sunsets red and orange?", "At sunset the light travels through much more air to reach you. Most of the blue is scattered out of the beam along the way, so the light that arrives directly from the Sun is dominated by the longer red and orange wavelengths. Dust and smoke make the effect stronger."),
            ("Is the sky blue on Mars too?", "No, the daytime sky on Mars is a butterscotch or pinkish colour, because fine reddish dust in the thin atmosphere scatters light differently. Curiously, Martian sunsets look bluish."),
        ],
    },
    {
        "q": "How does photosynthesis work?",
        "paragraphs": [
            "Photosynthesis is the process plants, algae and some bacteria use to turn light into chemical energy. It takes place mainly in the chloroplasts of leaf cells, which contain the green pigment chlorophyll.",
            "In the light-dependent reactions, chlorophyll absorbs light and uses its energy to split water molecules. This releases oxygen as a by-product and produces two energy carriers, ATP and NADPH.",
            "In the Calvin cycle, which does not need light directly, the plant uses ATP and NADPH to fix carbon dioxide from the air into sugars. Overall, six molecules of carbon dioxide and six of water become one molecule of glucose and six of oxygen. The plant uses the glucose for energy and to build cellulose, starch and other molecules.",
        ],
        "followups": [
            ("Do plants also breathe?", "Yes. Plants respire all the time, day and night, breaking down sugars to release energy and giving off carbon dioxide. During the day photosynthesis usually outpaces respiration, so a plant takes in more carbon dioxide than it releases."),
        ],
    },
    {
        "q": "What causes the seasons?",
        "paragraphs": [
            "The seasons are caused by the tilt of the Earth's axis, about 23.5 degrees, not by changes in our distance from the Sun. In fact the Earth is closest to the Sun in early January.",
            "As the Earth orbits, each hemisphere spends part of the year tilted towards the Sun. Then the Sun climbs higher in the sky, its light hits the ground more directly and the days are longer, so that hemisphere has summer. Six months later the same hemisphere is tilted away, the sunlight is spread out and the days are short, which gives winter.",
        ],
        "followups": [
            ("So when it's winter in Europe it's summer in Australia?", "Exactly. The hemispheres have opposite seasons, which is why Australians often celebrate Christmas with a barbecue on the beach."),
            ("What are the solstices?", "They are the two moments each year when the tilt points most directly towards or away from the Sun: around 21 June and 21 December. They give the longest and shortest days of the year."),
        ],
    },
    {
        "q": "How do vaccines work?",
        "paragraphs": [
            "A vaccine trains the immune system to recognise a germ without you having to catch the disease first. It contains a harmless piece or version of the pathogen, such as an inactivated virus, a single protein, or instructions (mRNA) that let your cells make that protein for a short time.",
            "The immune system reacts to this as if it were a real infection. It produces antibodies and, importantly, memory B cells and T cells that remember the shape of the invader.",
            "If you are exposed to the real pathogen later, those memory cells recognise it quickly and mount a strong response within days instead of weeks, often before you get seriously ill. When enough people are immune, the germ struggles to spread at all, which also protects people who cannot be vaccinated.",
        ],
        "followups": [
            ("Why do some vaccines need boosters?", "Immune memory fades for some pathogens, and some viruses, such as influenza, change over time. A booster refreshes the memory or updates it to match the strains that are circulating."),
        ],
    },
    {
        "q": "Can you explain compound interest with an example?",
        "paragraphs": [
            "Compound interest means you earn interest not only on the money you put in but also on the interest it has already earned. The formula is A = P × (1 + r)^n, where P is the starting amount, r the yearly rate and n the number of years.",
            "For example, £1,000 invested at 5% a year grows to £1,050 after one year. In the second year you earn 5% of £1,050, which is £52.50, so you have £1,102.50. After ten years you would have about £1,628.89, and after thirty years about £4,321.94, even though you never added another penny.",
        ],
        "followups": [
            ("How is that different from simple interest?", "Simple interest is paid only on the original amount. £1,000 at 5% simple interest earns £50 every year, so after ten years you have £1,500 rather than £1,628.89. The gap widens the longer you wait."),
            ("What's the rule of 72?", "It is a quick way to estimate doubling time: divide 72 by the interest rate. At 6% a year your money doubles in roughly 72 ÷ 6 = 12 years."),
        ],
    },
    {
        "q": "How does a refrigerator keep food cold?",
        "paragraphs": [
            "A fridge doesn't make cold; it moves heat from the inside to the outside. It does this by pumping a refrigerant around a closed loop of pipes.",
            "Inside the fridge, the liquid refrigerant passes through an expansion valve and evaporates in the coils at low pressure. Evaporation absorbs heat, so the coils and the air around them get cold. The compressor then squeezes the vapour, which makes it hot, and pushes it through the coils at the back, where it releases that heat into the kitchen and condenses back into a liquid. Then the cycle starts again.",
        ],
        "followups": [
            ("Why is the back of my fridge warm?", "That is the condenser releasing the heat taken out of the food compartment, plus the heat from the compressor motor. Leave a few centimetres of space behind the fridge so it can get rid of that heat efficiently."),
        ],
    },
    {
        "q": "What is a black hole?",
        "paragraphs": [
            "A black hole is a region of space where matter is packed so densely that gravity prevents anything, even light, from escaping. The boundary beyond which there is no return is called the event horizon.",
            "Most known black holes form when a very massive star runs out of fuel and its core collapses. Supermassive black holes, millions or billions of times the mass of the Sun, sit at the centres of most large galaxies, including our own Milky Way, where Sagittarius A* weighs about four million solar masses.",
            "We can't see black holes directly, but we can see their effects: stars orbiting an invisible object, gas heating up and glowing as it spirals inward, and gravitational waves from black holes merging. In 2019 the Event Horizon Telescope released the first image of the shadow of a black hole, in the galaxy M87.",
        ],
        "followups": [
            ("What would happen if you fell into one?", "For a small black hole, the difference in gravity between your head and feet would stretch you out, an effect nicknamed spaghettification. For a supermassive one, you could cross the event horizon without noticing anything special, but you could never send a signal back out."),
        ],
    },
]

TRIVIA = [
    ("How many legs does a spider have?", "Eight. Insects have six, which is one easy way to tell them apart."),
    ("Who wrote Pride and Prejudice?", "Jane Austen. It was published in 1813."),
    ("What is the boiling point of water at sea level?", "100 °C, or 212 °F."),
    ("What's the largest planet in the solar system?", "Jupiter. It is more than twice as massive as all the other planets combined."),
    ("How many minutes are there in a day?", "1,440 (24 hours × 60 minutes)."),
    ("What is the chemical symbol for gold?", "Au, from the Latin word aurum."),
    ("Which ocean is the largest?", "The Pacific Ocean, which covers about a third of the Earth's surface."),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci, in the early 1500s."),
    ("How many bones are in the adult human body?", "206. Babies are born with around 300, and many fuse together as they grow."),
    ("What is the speed of light?", "About 299,792 kilometres per second in a vacuum."),
    ("What's the tallest mountain on Earth?", "Mount Everest, at 8,849 metres above sea level."),
    ("What is the freezing point of water in Fahrenheit?", "32 °F, which is 0 °C."),
]

TRANSLATIONS = [
    ("How do you say \"thank you\" in Japanese?", "ありがとう (arigatō). For more politeness, say ありがとうございます (arigatō gozaimasu)."),
    ("Translate \"good morning\" into Spanish.", "Buenos días."),
    ("What does the German word \"Schadenfreude\" mean?", "It means the pleasure someone feels at another person's misfortune. It combines Schaden (harm) and Freude (joy)."),
    ("How do I order a coffee in French?", "You can say « Un café, s'il vous plaît. » A café in France is an espresso; ask for un café crème if you want milk."),
    ("What does \"déjà vu\" mean?", "It's French for \"already seen\": the feeling that you have already experienced the present moment."),
]

SYSTEM_PERSONAS = [
    ("You are a concise assistant. Answer in one or two sentences.", "trivia"),
    ("You are a concise assistant. Answer in one or two sentences.", "capital_short"),
    ("You are a patient maths tutor. Show your working step by step.", "multiplication"),
    ("You are a patient maths tutor. Show your working step by step.", "speed"),
    ("You are a friendly cooking assistant. Give clear ingredient lists and numbered steps.", "recipe"),
    ("You are an expert programmer. Include short code examples in your answers.", "code"),
    ("You are an expert programmer. Include short code examples in your answers.", "code"),
    ("You are a geography teacher talking to secondary-school students.", "capital"),
    ("You are a science communicator. Explain things clearly, without jargon, in a few paragraphs.", "explainer"),
    ("You are a science communicator. Explain things clearly, without jargon, in a few paragraphs.", "explainer"),
    ("You are a helpful language tutor.", "translation"),
    ("You are a helpful assistant. Use metric units unless asked otherwise.", "conversion"),
]

# Paragraphs used only as extra tokenizer training text.
CORPUS_PARAGRAPHS = [
    "The printing press, developed by Johannes Gutenberg around 1440, changed how knowledge travelled through Europe. Before it, books were copied by hand, usually by monks, and a single Bible could take years to finish. Movable metal type made it possible to print hundreds of identical pages in a day, and within fifty years presses were working in more than two hundred cities.",
    "Tides are caused mainly by the Moon's gravity pulling on the oceans. The water on the side of the Earth facing the Moon bulges towards it, and a second bulge forms on the opposite side. As the Earth turns, most coasts pass through both bulges, giving two high tides and two low tides roughly every twenty-four hours and fifty minutes.",
    "Honeybees communicate the location of flowers with the waggle dance. A forager returning to the hive runs in a figure-of-eight, waggling her body during the straight part. The angle of that run relative to vertical shows the direction of the food relative to the Sun, and the length of the waggle tells the others how far away it is.",
    "A bicycle needs surprisingly little maintenance if you do a few things regularly. Keep the tyres pumped to the pressure printed on their sidewall, clean and oil the chain every few weeks, and check that the brakes bite firmly before each ride. Most squeaks come from a dry chain, and most punctures from tyres that were too soft.",
    "The water cycle moves water continuously between the oceans, the air and the land. The Sun heats the sea and water evaporates; the vapour rises, cools and condenses into clouds; and the clouds release rain or snow. Some of that water runs off into rivers, some soaks into the ground, and eventually almost all of it returns to the sea.",
    "Computers store numbers in binary, using only the digits zero and one. Eight bits make a byte, which can represent 256 different values. Integers are usually stored in 32 or 64 bits, while fractional numbers use a floating-point format that stores a sign, an exponent and a mantissa, which is why 0.1 + 0.2 is not exactly 0.3 in most programming languages.",
    "Tomatoes are easy to grow in a sunny spot. Sow the seeds indoors about six weeks before the last frost, then plant the seedlings out deeply, burying part of the stem, which will grow extra roots. Water them regularly at the base rather than on the leaves, and feed them with a high-potassium fertiliser once the first flowers appear.",
    "The old lighthouse keeper climbed the spiral stairs every evening at dusk. There were one hundred and twelve steps, and he had counted them so many times that he no longer needed to. At the top he trimmed the wick, polished the great lens, and watched the lamp throw its beam across the dark water towards the ships he would never meet.",
    "Travelling across Europe by train is slower than flying but often more pleasant. Stations are usually in the centre of town, there is no security queue, and you can watch the countryside change from the window. Night trains have made a comeback, linking cities such as Vienna, Paris, Amsterdam and Zürich while you sleep.",
    "Coffee beans are the seeds of a cherry-like fruit that grows in a belt around the equator. Arabica plants prefer high altitudes and give a sweeter, more aromatic cup, while robusta is hardier, more bitter and contains almost twice as much caffeine. Roasting turns the green seeds brown and creates hundreds of aroma compounds.",
    "In chess, the opening is about controlling the centre, developing the knights and bishops quickly, and getting the king to safety by castling. Beginners often move the same piece several times or bring the queen out too early, where it can be chased around by the opponent's minor pieces while they develop with tempo.",
    "Volcanoes form where molten rock, called magma, reaches the surface. Most of them lie along the boundaries of tectonic plates, like the Ring of Fire around the Pacific. Some, such as those in Hawaii, sit above hot spots in the mantle, where a plume of hot rock melts through the crust as the plate slowly drifts over it.",
    "A simple budget starts with what comes in and what goes out each month. List your income after tax, then your fixed costs such as rent, bills and transport, and finally the flexible spending on food, clothes and going out. Paying a fixed amount into savings on payday, before you spend anything else, is one of the most effective habits.",
    "If you want to run your first five kilometres, build up gradually. Start with alternating one minute of jogging and two minutes of walking for twenty minutes, three times a week, and lengthen the running intervals every week. Most injuries come from doing too much too soon, so rest days matter as much as training days.",
    "Public libraries lend far more than books. Many offer e-books and audiobooks through an app, free internet access, study rooms, language courses, and even tools or musical instruments. Librarians are also expert researchers who can help you find reliable information on almost any subject.",
    "In photography, exposure depends on three settings. The aperture controls how much light passes through the lens and how much of the scene is in focus; the shutter speed controls how long the sensor is exposed and whether motion looks frozen or blurred; and the ISO sets the sensor's sensitivity, with higher values adding visible noise.",
    "Good bread needs only flour, water, salt and yeast, plus time. Kneading develops gluten, a network of proteins that traps the gas produced by the yeast. A long, slow rise in a cool place gives the dough more flavour, and baking it in a very hot oven with some steam helps to form a crisp, shiny crust.",
    "On 20 July 1969 the lunar module Eagle landed in the Sea of Tranquillity. Neil Armstrong and Buzz Aldrin spent about two and a half hours walking on the surface, collecting rocks and setting up experiments, while Michael Collins orbited above them in the command module Columbia, waiting to bring them home.",
    "Recycling works best when materials are clean and sorted correctly. Rinse food from tins and jars, flatten cardboard boxes, and check your local rules, because different councils accept different plastics. Soft plastic bags and film often jam the sorting machines, so they usually need to go to separate collection points.",
    "Learning a new language is easier with a little practice every day than with a long session once a week. Listen to podcasts, label things around the house, and try to speak from the first week, even if you make mistakes. Native speakers are usually delighted that you are trying, and every conversation builds confidence.",
    "The weather forecast combines millions of observations from satellites, weather balloons, ships and ground stations. Supercomputers feed them into numerical models that divide the atmosphere into a three-dimensional grid and step the equations of fluid motion forward in time. Forecasts are usually reliable for about five days, and useful for about ten.",
    "Exchange rates move every second as banks, companies and investors buy and sell currencies. When you travel, the rate you get at an airport kiosk is usually much worse than the mid-market rate you see online. Paying by card in the local currency, rather than letting the terminal convert it for you, is often the cheapest option.",
    "Time zones were introduced in the nineteenth century, largely because of the railways. Before that, every town kept its own local time based on the Sun, which made timetables very confusing. Today there are around forty different local times in use, because some countries use offsets of half an hour or even forty-five minutes.",
    "A good function does one thing and has a name that says what that thing is. Keep functions short, pass data in through arguments rather than global variables, and return results instead of printing them. Such functions are easy to test, easy to reuse, and easy for the next person, often your future self, to understand.",
]

# ---------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------

TOOL_SCHEMAS = {
    "get_current_weather": {
        "type": "function",
        "function": {
            "name": "get_current_weather",
            "description": "Get the current weather in a given city.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "The city name, e.g. Paris"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city"],
            },
        },
    },
    "convert_currency": {
        "type": "function",
        "function": {
            "name": "convert_currency",
            "description": "Convert money between currencies at today's rate.",
            "parameters": {
                "type": "object",
                "properties": {
                    "amount": {"type": "number"},
                    "from_currency": {"type": "string", "description": "Currency code, e.g. USD"},
                    "to_currency": {"type": "string", "description": "Currency code, e.g. EUR"},
                },
                "required": ["amount", "from_currency", "to_currency"],
            },
        },
    },
    "get_local_time": {
        "type": "function",
        "function": {
            "name": "get_local_time",
            "description": "Get the current local time in an IANA time zone.",
            "parameters": {
                "type": "object",
                "properties": {
                    "timezone": {"type": "string", "description": "IANA time zone, e.g. Europe/London"},
                },
                "required": ["timezone"],
            },
        },
    },
    "search_recipes": {
        "type": "function",
        "function": {
            "name": "search_recipes",
            "description": "Search a recipe database by ingredients.",
            "parameters": {
                "type": "object",
                "properties": {
                    "ingredients": {"type": "array", "items": {"type": "string"}, "description": "Ingredients to use"},
                    "max_minutes": {"type": "integer", "description": "Maximum total cooking time"},
                },
                "required": ["ingredients"],
            },
        },
    },
}

WEATHER_CITIES = ["Paris", "Edinburgh", "Toronto", "Rome", "Madrid", "Lisbon", "Chicago", "Berlin", "Kyoto"]
WEATHER_CONDITIONS = ["sunny", "partly cloudy", "overcast", "light rain", "showery", "clear", "windy"]

# Units per 1 unit of the base currency (fixed, illustrative rates).
EXCHANGE_RATES = {
    ("USD", "EUR"): 0.92,
    ("GBP", "USD"): 1.27,
    ("JPY", "GBP"): 0.0051,
    ("EUR", "CHF"): 0.97,
    ("AUD", "NZD"): 1.09,
    ("CAD", "EUR"): 0.68,
}
CURRENCY_NAMES = {
    "USD": "US dollars", "EUR": "euros", "GBP": "pounds", "JPY": "yen",
    "CHF": "Swiss francs", "AUD": "Australian dollars", "NZD": "New Zealand dollars", "CAD": "Canadian dollars",
}
TIMEZONES = [("Tokyo", "Asia/Tokyo", "+09:00"), ("New York", "America/New_York", "-04:00"), ("Sydney", "Australia/Sydney", "+10:00")]


# ---------------------------------------------------------------------------
# Message helpers
# ---------------------------------------------------------------------------


def user(content: str) -> dict:
    return {"role": "user", "content": content}


def assistant(content: str) -> dict:
    return {"role": "assistant", "content": content}


def system(content: str) -> dict:
    return {"role": "system", "content": content}


def tool_call_message(*calls: tuple[str, dict]) -> dict:
    """An assistant message that calls one or more tools."""
    return {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"type": "function", "function": {"name": name, "arguments": args}} for name, args in calls],
    }


def tool_result(result: dict) -> dict:
    return {"role": "tool", "content": json.dumps(result, ensure_ascii=False)}


def exchanges(pairs: list[tuple[str, str]]) -> list[dict]:
    """Turn (question, answer) pairs into alternating user/assistant messages."""
    messages = []
    for question, answer in pairs:
        messages += [user(question), assistant(answer)]
    return messages


class Deck:
    """Draws items from a list in a shuffled order, reshuffling when exhausted."""

    def __init__(self, items: list, rng: random.Random):
        self.items = list(items)
        self.rng = rng
        self.pending: list = []

    def draw(self):
        if not self.pending:
            self.pending = list(self.items)
            self.rng.shuffle(self.pending)
        return self.pending.pop()


def fmt_number(x: float) -> str:
    """Format with thousands separators and at most two decimals."""
    if abs(x - round(x)) < 1e-9:
        return f"{int(round(x)):,}"
    return f"{x:,.2f}"


# ---------------------------------------------------------------------------
# Question/answer generators
# ---------------------------------------------------------------------------


class QA:
    """Produces (question, answer) pairs and follow-up chains from the lists above."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.countries = Deck(COUNTRIES, rng)
        self.recipes = Deck(RECIPES, rng)
        self.code = Deck(CODE_QA, rng)
        self.explainers = Deck(EXPLAINERS, rng)
        self.trivia = Deck(TRIVIA, rng)
        self.translations = Deck(TRANSLATIONS, rng)

    # -- single exchanges -------------------------------------------------

    def capital(self, short: bool = False) -> tuple[str, str]:
        c = self.countries.draw()
        question = self.rng.choice([
            "What is the capital of {country}?",
            "What's the capital city of {country}?",
            "Which city is the capital of {country}?",
        ]).format(**c)
        answer = f"The capital of {c['country']} is {c['capital']}."
        if not short:
            answer += " " + c["fact"]
        return question, answer

    def multiplication(self) -> tuple[str, str]:
        return self._multiplication(self.rng.randint(12, 99), self.rng.randint(13, 99))

    def _multiplication(self, a: int, b: int) -> tuple[str, str]:
        tens, ones = divmod(b, 10)
        question = self.rng.choice(["What is {a} × {b}?", "Can you multiply {a} by {b}?", "Calculate {a} times {b}."])
        question = question.format(a=a, b=b)
        if ones == 0:
            working = f"{a} × {b} = {a} × {tens} × 10 = {a * tens} × 10 = {a * b}."
        else:
            working = (
                f"Split {b} into {tens * 10} + {ones}:\n\n"
                f"{a} × {tens * 10} = {a * tens * 10}\n"
                f"{a} × {ones} = {a * ones}\n\n"
                f"Add them: {a * tens * 10} + {a * ones} = {a * b}.\n\nSo {a} × {b} = {a * b}."
            )
        return question, working

    def percentage(self) -> tuple[str, str]:
        pct = self.rng.choice([5, 10, 12.5, 15, 20, 25, 40])
        base = self.rng.choice([80, 120, 240, 360, 480, 640, 1200])
        result = pct * base / 100
        question = f"What is {fmt_number(pct)}% of {base}?"
        answer = f"{fmt_number(pct)}% of {base} is {fmt_number(pct / 100)} × {base} = {fmt_number(result)}."
        return question, answer

    def speed(self) -> tuple[str, str]:
        hours = self.rng.choice([1.5, 2, 2.5, 3, 4])
        speed = self.rng.choice([48, 60, 72, 84, 96, 110])
        distance = speed * hours
        vehicle = self.rng.choice(["train", "car", "coach"])
        question = (
            f"A {vehicle} travels {fmt_number(distance)} km in {fmt_number(hours)} hours. "
            "What is its average speed?"
        )
        answer = (
            "Average speed is distance divided by time.\n\n"
            f"Distance = {fmt_number(distance)} km\nTime = {fmt_number(hours)} h\n\n"
            f"Speed = {fmt_number(distance)} ÷ {fmt_number(hours)} = {speed} km/h.\n\n"
            f"So the {vehicle}'s average speed is {speed} km/h."
        )
        return question, answer

    def conversion(self) -> tuple[str, str]:
        kind = self.rng.choice(["miles", "fahrenheit", "pounds"])
        if kind == "miles":
            miles = self.rng.choice([3, 5, 12, 26.2, 50])
            km = miles * 1.609344
            return (f"How many kilometres is {fmt_number(miles)} miles?",
                    f"{fmt_number(miles)} miles is about {km:.1f} km (1 mile = 1.609 km).")
        if kind == "fahrenheit":
            f = self.rng.choice([50, 68, 77, 86, 98.6, 104])
            c = (f - 32) * 5 / 9
            return (f"What is {fmt_number(f)} °F in Celsius?",
                    f"Subtract 32 and multiply by 5/9: ({fmt_number(f)} − 32) × 5/9 = {c:.1f} °C.")
        lb = self.rng.choice([2, 10, 150, 180])
        kg = lb * 0.45359237
        return (f"Convert {lb} pounds to kilograms.", f"{lb} lb is about {kg:.1f} kg (1 lb ≈ 0.454 kg).")

    def recipe(self) -> tuple[str, str]:
        return self._recipe_answer(self.recipes.draw())

    def _recipe_answer(self, r: dict) -> tuple[str, str]:
        ingredients = "\n".join(f"- {item}" for item in r["ingredients"])
        steps = "\n".join(f"{i}. {step}" for i, step in enumerate(r["steps"], start=1))
        answer = (
            f"Here's a simple {r['name']} recipe (serves {r['serves']}).\n\n"
            f"Ingredients:\n{ingredients}\n\nMethod:\n{steps}\n\nTip: {r['tip']}"
        )
        return r["ask"], answer

    def code_question(self) -> tuple[str, str]:
        item = self.code.draw()
        return item["q"], item["a"]

    def explainer(self) -> tuple[str, str]:
        item = self.explainers.draw()
        return item["q"], "\n\n".join(item["paragraphs"])

    def trivia_question(self) -> tuple[str, str]:
        return self.trivia.draw()

    def translation(self) -> tuple[str, str]:
        return self.translations.draw()

    def by_kind(self, kind: str) -> tuple[str, str]:
        return {
            "capital": self.capital,
            "capital_short": lambda: self.capital(short=True),
            "multiplication": self.multiplication,
            "percentage": self.percentage,
            "speed": self.speed,
            "conversion": self.conversion,
            "recipe": self.recipe,
            "code": self.code_question,
            "explainer": self.explainer,
            "trivia": self.trivia_question,
            "translation": self.translation,
        }[kind]()

    # -- multi-turn chains ------------------------------------------------

    def geography_chain(self) -> list[tuple[str, str]]:
        c = self.countries.draw()
        return [
            (f"What is the capital of {c['country']}?", f"The capital of {c['country']} is {c['capital']}. {c['fact']}"),
            ("What language do people speak there?", f"The main language of {c['country']} is {c['language']}."),
            ("And what currency do they use?", f"{c['country']} uses {c['currency']}."),
            (f"Any tips for visiting {c['capital']}?", c["tip"]),
        ]

    def maths_chain(self) -> list[tuple[str, str]]:
        a, b = self.rng.randint(12, 99), self.rng.randint(13, 99)
        question, answer = self._multiplication(a, b)
        product = a * b
        divisor = self.rng.choice([3, 4, 7, 8])
        return [
            (question, answer),
            (f"Now divide that by {divisor}.", f"{product} ÷ {divisor} = {fmt_number(product / divisor)}."),
            ("Is the original answer a prime number?",
             f"No. {product} = {a} × {b}, so it has factors other than 1 and itself."),
            ("What's its square root, roughly?", f"√{product} ≈ {math.sqrt(product):.2f}."),
        ]

    def recipe_chain(self) -> list[tuple[str, str]]:
        r = self.recipes.draw()
        return [
            self._recipe_answer(r),
            (r["swap_q"], r["swap_a"]),
            ("How long does it keep?", r["storage"]),
            ("How many people does that serve?",
             f"It serves {r['serves']}. Scale the ingredients up or down in proportion for more or fewer people."),
        ]

    def code_chain(self) -> list[tuple[str, str]]:
        item = self.code.draw()
        return [(item["q"], item["a"])] + list(item["followups"])

    def explainer_chain(self) -> list[tuple[str, str]]:
        item = self.explainers.draw()
        return [(item["q"], "\n\n".join(item["paragraphs"]))] + list(item["followups"])

    def conversion_chain(self) -> list[tuple[str, str]]:
        miles = self.rng.choice([5, 10, 13.1, 26.2])
        km = miles * 1.609344
        pace = self.rng.choice([8, 10, 12])
        minutes = round(km / pace * 60)
        return [
            (f"How many kilometres is {fmt_number(miles)} miles?", f"{fmt_number(miles)} miles is about {km:.2f} km."),
            ("And how many metres is that?", f"About {round(km * 1000):,} metres."),
            (f"How long would it take to run that at {pace} km/h?",
             f"{km:.2f} km ÷ {pace} km/h ≈ {km / pace:.2f} hours, which is about {minutes // 60} h {minutes % 60:02d} min."),
        ]


# ---------------------------------------------------------------------------
# Conversation builders
# ---------------------------------------------------------------------------

SINGLE_TURN_KINDS = [
    "capital", "multiplication", "code", "recipe", "trivia", "trivia", "explainer", "conversion",
    "code", "capital", "trivia", "percentage", "translation", "translation", "speed",
]
MULTI_TURN_CHAINS = [
    "geography_chain", "geography_chain", "maths_chain", "maths_chain", "recipe_chain", "recipe_chain",
    "code_chain", "code_chain", "code_chain", "conversion_chain", "explainer_chain", "explainer_chain",
]


def single_turn_conversations(qa: QA) -> list[dict]:
    return [{"messages": exchanges([qa.by_kind(kind)])} for kind in SINGLE_TURN_KINDS]


def system_prompt_conversations(qa: QA) -> list[dict]:
    return [{"messages": [system(prompt)] + exchanges([qa.by_kind(kind)])} for prompt, kind in SYSTEM_PERSONAS]


def multi_turn_conversations(qa: QA, rng: random.Random) -> list[dict]:
    conversations = []
    for name in MULTI_TURN_CHAINS:
        chain = getattr(qa, name)()
        n_turns = min(rng.randint(2, 4), len(chain))
        conversations.append({"messages": exchanges(chain[:n_turns])})
    return conversations


def weather_report(rng: random.Random, city: str, unit: str) -> dict:
    celsius = rng.randint(4, 29)
    temperature = celsius if unit == "celsius" else round(celsius * 9 / 5 + 32)
    return {
        "city": city,
        "temperature": temperature,
        "unit": unit,
        "condition": rng.choice(WEATHER_CONDITIONS),
        "humidity": rng.randint(35, 90),
    }


def describe_weather(report: dict) -> str:
    symbol = "°C" if report["unit"] == "celsius" else "°F"
    return f"{report['temperature']}{symbol} and {report['condition']} in {report['city']}, with {report['humidity']}% humidity"


def weather_advice(report: dict) -> str:
    if report["condition"] in ("light rain", "showery"):
        return "Take an umbrella if you're heading out."
    celsius = report["temperature"] if report["unit"] == "celsius" else (report["temperature"] - 32) * 5 / 9
    if celsius < 12:
        return "It's chilly, so a warm coat is a good idea."
    if celsius > 24:
        return "It's warm, so light clothes and some water should do."
    return "A light jacket should be enough."


def weather_conversation(rng: random.Random, city: str, unit: str, with_system: bool) -> dict:
    question = rng.choice([
        f"What's the weather like in {city} right now?",
        f"Do I need a jacket in {city} today?",
        f"How warm is it in {city} at the moment?",
    ])
    if unit == "fahrenheit":
        question += " Please give me the temperature in Fahrenheit."
    report = weather_report(rng, city, unit)
    messages = [system("You are a travel assistant with access to live data.")] if with_system else []
    messages += [
        user(question),
        tool_call_message(("get_current_weather", {"city": city, "unit": unit})),
        tool_result(report),
        assistant(f"It's currently {describe_weather(report)}. {weather_advice(report)}"),
    ]
    return {"messages": messages, "tools": [TOOL_SCHEMAS["get_current_weather"]]}


def two_city_weather_conversation(rng: random.Random, first: str, second: str) -> dict:
    reports = [weather_report(rng, city, "celsius") for city in (first, second)]
    warmer = max(reports, key=lambda r: r["temperature"])
    messages = [
        user(f"I'm choosing between {first} and {second} for a weekend away. What's the weather in both right now?"),
        tool_call_message(*[("get_current_weather", {"city": r["city"], "unit": "celsius"}) for r in reports]),
        tool_result(reports[0]),
        tool_result(reports[1]),
        assistant(
            f"Right now it's {describe_weather(reports[0])}, and {describe_weather(reports[1])}. "
            f"{warmer['city']} is the warmer of the two today, but conditions can change by the weekend, "
            "so check the forecast again a day or two before you travel."
        ),
    ]
    return {"messages": messages, "tools": [TOOL_SCHEMAS["get_current_weather"]]}


def conversion_result(amount: float, pair: tuple[str, str]) -> dict:
    rate = EXCHANGE_RATES[pair]
    return {"amount": amount, "from": pair[0], "to": pair[1], "rate": rate, "converted": round(amount * rate, 2)}


def currency_conversation(rng: random.Random, pair: tuple[str, str], with_system: bool) -> dict:
    src, dst = pair
    amount = rng.choice({"JPY": [15000, 42000, 8000]}.get(src, [40, 125, 250, 600, 1200]))
    question = rng.choice([
        f"How much is {amount:,} {CURRENCY_NAMES[src]} in {CURRENCY_NAMES[dst]}?",
        f"Can you convert {amount:,} {src} to {dst} for me?",
        f"I have {amount:,} {CURRENCY_NAMES[src]} left over from a trip. What's that worth in {CURRENCY_NAMES[dst]}?",
    ])
    result = conversion_result(amount, pair)
    messages = [system("You are a finance assistant. Always mention that rates change during the day.")] if with_system else []
    messages += [
        user(question),
        tool_call_message(("convert_currency", {"amount": amount, "from_currency": src, "to_currency": dst})),
        tool_result(result),
        assistant(
            f"{amount:,} {src} is about {result['converted']:,.2f} {dst} at today's rate of {result['rate']} {dst} per {src}. "
            "Rates change throughout the day, and banks and exchange kiosks usually add a margin, so expect to receive a little less."
        ),
    ]
    return {"messages": messages, "tools": [TOOL_SCHEMAS["convert_currency"]]}


def local_time_conversation(rng: random.Random) -> dict:
    city, zone, offset = rng.choice(TIMEZONES)
    hour, minute = rng.randint(0, 23), rng.randint(0, 59)
    result = {"timezone": zone, "local_time": f"2024-05-14T{hour:02d}:{minute:02d}:00{offset}"}
    late = hour >= 22 or hour < 7
    advice = "It's probably too late to call, so a message might be better." if late else "That's a reasonable time to call."
    messages = [
        user(f"What time is it in {city} right now? I want to call a friend there."),
        tool_call_message(("get_local_time", {"timezone": zone})),
        tool_result(result),
        assistant(f"It's {hour:02d}:{minute:02d} in {city} ({zone}). {advice}"),
    ]
    return {"messages": messages, "tools": [TOOL_SCHEMAS["get_local_time"]]}


def weather_then_currency_conversation(rng: random.Random) -> dict:
    report = weather_report(rng, "Zürich", "celsius")
    amount = rng.choice([300, 500, 800])
    result = conversion_result(amount, ("EUR", "CHF"))
    messages = [
        system("You are a travel assistant with access to live data."),
        user("I'm flying to Zürich tomorrow. What's the weather there?"),
        tool_call_message(("get_current_weather", {"city": "Zürich", "unit": "celsius"})),
        tool_result(report),
        assistant(f"It's currently {describe_weather(report)}. {weather_advice(report)}"),
        user(f"Great. And how many Swiss francs will I get for {amount} euros?"),
        tool_call_message(("convert_currency", {"amount": amount, "from_currency": "EUR", "to_currency": "CHF"})),
        tool_result(result),
        assistant(
            f"{amount} EUR is about {result['converted']:,.2f} CHF at a rate of {result['rate']}. "
            "Card payments are accepted almost everywhere in Switzerland, so you may not need much cash."
        ),
    ]
    return {"messages": messages, "tools": [TOOL_SCHEMAS["get_current_weather"], TOOL_SCHEMAS["convert_currency"]]}


def recipe_search_conversation(rng: random.Random) -> dict:
    ingredients = rng.choice([["eggs", "spinach", "feta"], ["chickpeas", "tomatoes", "onion"], ["rice", "peas", "eggs"]])
    max_minutes = rng.choice([20, 30, 45])
    found = {
        "eggs": [{"title": "Spinach and feta frittata", "minutes": 20}, {"title": "Shakshuka with greens", "minutes": 25}],
        "chickpeas": [{"title": "Chickpea and tomato curry", "minutes": 30}, {"title": "Smoky chickpea stew", "minutes": 35}],
        "rice": [{"title": "Egg fried rice with peas", "minutes": 15}, {"title": "Quick kedgeree", "minutes": 30}],
    }[ingredients[0]]
    matches = [r for r in found if r["minutes"] <= max_minutes]
    listing = "\n".join(f"- {r['title']} ({r['minutes']} minutes)" for r in matches)
    messages = [
        user(f"I've got {', '.join(ingredients[:-1])} and {ingredients[-1]} in the fridge. "
             f"What can I cook in under {max_minutes} minutes?"),
        tool_call_message(("search_recipes", {"ingredients": ingredients, "max_minutes": max_minutes})),
        tool_result({"results": matches}),
        assistant(f"Here's what I found that fits your time limit:\n\n{listing}\n\nWould you like the full recipe for one of them?"),
    ]
    return {"messages": messages, "tools": [TOOL_SCHEMAS["search_recipes"]]}


def tool_conversations(rng: random.Random) -> list[dict]:
    cities = Deck(WEATHER_CITIES, rng)
    return [
        weather_conversation(rng, cities.draw(), "celsius", with_system=False),
        weather_conversation(rng, cities.draw(), "fahrenheit", with_system=True),
        two_city_weather_conversation(rng, cities.draw(), cities.draw()),
        currency_conversation(rng, ("USD", "EUR"), with_system=False),
        currency_conversation(rng, ("JPY", "GBP"), with_system=False),
        currency_conversation(rng, ("GBP", "USD"), with_system=True),
        local_time_conversation(rng),
        weather_then_currency_conversation(rng),
        recipe_search_conversation(rng),
    ]


def build_conversations(seed: int = SEED) -> list[dict]:
    """All 48 conversations, in a seeded shuffled order."""
    rng = random.Random(seed)
    qa = QA(rng)
    conversations = (
        single_turn_conversations(qa)
        + system_prompt_conversations(qa)
        + multi_turn_conversations(qa, rng)
        + tool_conversations(rng)
    )
    rng.shuffle(conversations)
    for conversation in conversations:
        assert conversation["messages"][-1]["role"] == "assistant"
    return conversations


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


# ---------------------------------------------------------------------------
# Tokenizers
# ---------------------------------------------------------------------------


def training_texts(conversations: list[dict]) -> list[str]:
    """Message contents, tool schemas / calls as JSON, the template's fixed texts and the paragraph corpus."""
    texts = [DEFAULT_SYSTEM_PROMPT, TOOLS_PREAMBLE, TOOLS_POSTAMBLE]
    for conversation in conversations:
        texts += [json.dumps(tool, ensure_ascii=False) for tool in conversation.get("tools", [])]
        for message in conversation["messages"]:
            if message["content"]:
                texts.append(message["content"])
            for call in message.get("tool_calls", []):
                texts.append(json.dumps(call["function"], ensure_ascii=False))
    return texts + CORPUS_PARAGRAPHS


def train_byte_level_bpe(texts: list[str], special_tokens: list[str]) -> Tokenizer:
    """Train a byte-level BPE; the special tokens get ids 0..len(special_tokens)-1."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=special_tokens,
        initial_alphabet=sorted(pre_tokenizers.ByteLevel.alphabet()),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    for expected_id, token in enumerate(special_tokens):
        assert tokenizer.token_to_id(token) == expected_id, token
    return tokenizer


def write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8", newline="\n")


def write_chatml_tokenizer(out_dir: Path, texts: list[str]) -> None:
    tokenizer = train_byte_level_bpe(texts, CHATML_SPECIAL_TOKENS)
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    write_json(out_dir / "tokenizer_config.json", {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": None,
        "model_max_length": MODEL_MAX_LENGTH,
        "add_bos_token": False,
        "chat_template": chat_template(),
    })


def write_llama3_tokenizer(out_dir: Path, texts: list[str]) -> None:
    tokenizer = train_byte_level_bpe(texts, LLAMA3_SPECIAL_TOKENS)
    bos = "<|begin_of_text|>"
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A",
        pair=f"{bos} $A {bos} $B:1",
        special_tokens=[(bos, tokenizer.token_to_id(bos))],
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    write_json(out_dir / "tokenizer_config.json", {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": bos,
        "eos_token": "<|eot_id|>",
        "pad_token": None,
        "model_max_length": MODEL_MAX_LENGTH,
    })


# ---------------------------------------------------------------------------
# README
# ---------------------------------------------------------------------------

README = """\
# Sample data

Small, fully synthetic fixtures for trying out and testing padprep.
Everything here is generated; regenerate it all (deterministically) with:

    python scripts/make_sample_data.py

- `chat.jsonl` -- 48 conversations, one JSON object per line, in the OpenAI/TRL
  conversational shape `{"messages": [{"role", "content"}, ...], "tools": [...]}`:
  single-turn, with a system prompt, multi-turn, and tool calling (assistant
  `tool_calls` followed by `tool` messages). `tools` only appears on tool-calling rows.
- `tokenizer/` -- a ~3k-vocab byte-level BPE trained on that text, with ChatML
  special tokens (`<|endoftext|>`, `<|im_start|>`, `<|im_end|>`), a Qwen2.5-style
  chat template with tool support, `eos_token` `<|im_end|>` and deliberately no pad
  token.
- `tokenizer-bos/` -- the same kind of tokenizer with Llama-3 special tokens
  (`<|begin_of_text|>`, `<|end_of_text|>`, `<|start_header_id|>`,
  `<|end_header_id|>`, `<|eot_id|>`); its post-processor prepends
  `<|begin_of_text|>` to every encoded sequence. It has no chat template
  (use a built-in Llama-3 template).

Both tokenizers load with `transformers.AutoTokenizer.from_pretrained(path)` and
are far too small to be useful for anything but tests.
"""


def main() -> None:
    conversations = build_conversations()
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    write_jsonl(OUT_DIR / "chat.jsonl", conversations)
    texts = training_texts(conversations)
    write_chatml_tokenizer(OUT_DIR / "tokenizer", texts)
    write_llama3_tokenizer(OUT_DIR / "tokenizer-bos", texts)
    (OUT_DIR / "README.md").write_text(README, encoding="utf-8", newline="\n")
    print(f"wrote {len(conversations)} conversations and two tokenizers to {OUT_DIR}")


if __name__ == "__main__":
    main()
