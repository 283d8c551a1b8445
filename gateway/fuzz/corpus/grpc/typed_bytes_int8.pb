
m*
sBYTES*BaBbc*
iINT8*ýÿÿÿÿÿÿÿÿ