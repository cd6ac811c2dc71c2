"""A small names corpus shared by the GPT tests (one tiny data set, so tests share compiled steps)."""

NAMES = "\n".join(
    [
        "emma",
        "olivia",
        "ava",
        "isabella",
        "sophia",
        "mia",
        "charlotte",
        "amelia",
        "harper",
        "evelyn",
        "abigail",
        "emily",
        "ella",
        "elizabeth",
        "camila",
        "luna",
        "sofia",
        "avery",
        "mila",
        "aria",
        "scarlett",
        "nora",
        "lily",
        "zoe",
    ]
)
