"""A few CLINC150 intents with training examples, shared by the semantic and hybrid routing tests.

Utterances quoted verbatim from CLINC150's `train` split (Larson et al., EMNLP 2019, CC BY 3.0).
"""

CLINC_EXAMPLES: dict[str, list[str]] = {
    "balance": [
        "savings account balance at chase bank please",
        "check chase bank for my checking balance",
        "what is my checking account balance at chase",
        "i want my checking balance at chase",
        "what's my savings balance at chase",
        "do i have enough money in my chime bank account to take ashley to the movies tuesday",
        "check my visa account and see if i have enough money for dinner tonight",
        "is tehre enough in my bluebird account for groceries this week",
    ],
    "weather": [
        "what are the conditions like in orlando",
        "what's the temperature like in tampa",
        "what's the forecast like for pittsburgh",
        "what are the conditions like in sarasota",
        "what's the climate like in chicago",
        "what will the temperature be tomorrow",
        "will it rain today",
        "will it freeze tonight",
    ],
    "translate": [
        "what expression would i use to say i love you if i were an italian",
        "can you tell me how to say 'i do not speak much spanish', in spanish",
        "what is the equivalent of, 'life is good' in french",
        "tell me how to say, 'it is a beautiful morning' in italian",
        "if i were mongolian, how would i say that i am a tourist",
        "how do i say 'hotel' in finnish",
        "i need you to translate the sentence, 'we will be there soon' into portuguese",
        "please tell me how to ask for a taxi in french",
    ],
    "alarm": [
        "wake me up at noon tomorrow",
        "set my alarm for getting up",
        "make sure my alarm is set for three thirty in the morning",
        "please set an alarm for mid day",
        "have an alarm set for three in the morning",
        "you need to set alarm for me",
        "i need you to set alarm for me",
        "set the alarm for me",
    ],
}
